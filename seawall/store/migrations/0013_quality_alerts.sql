-- reserved (placeholder): filled by its owner's branch
SELECT 1;
