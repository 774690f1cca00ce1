-- Reserved: filled by the job queue (seawall/jobs/).
SELECT 1;
