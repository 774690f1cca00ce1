-- Reserved: filled by the cache backend.
SELECT 1;
