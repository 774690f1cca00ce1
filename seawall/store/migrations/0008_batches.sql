-- Reserved: files and batches.
SELECT 1;
