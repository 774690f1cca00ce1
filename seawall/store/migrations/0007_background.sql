-- Reserved: background responses (their event log).
SELECT 1;
