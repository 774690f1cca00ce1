-- Reserved: filled by the prompts backend.
SELECT 1;
