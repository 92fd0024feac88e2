"""`janus conformance`: Janus's side of the protocol played against any worker implementation.

`contract` names what a worker under test is given (environment, payload instructions),
`rules` judges what was seen (pure), `harness` drives the broker and the worker process,
`cli` is the command; `handler` and `python_worker` make the Python SDK a worker under test.
"""
