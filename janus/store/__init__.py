"""PostgreSQL adapter: migrations, named SQL, and the repository the service calls."""
