-- Reserved: filled by the rag backend.
SELECT 1;
