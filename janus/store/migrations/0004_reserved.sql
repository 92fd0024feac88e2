-- Reserved for another branch's migration (numbers have no gaps): replace this file by it when merging.
SELECT 1;
