-- Reserved: feedback and scores.
SELECT 1;
