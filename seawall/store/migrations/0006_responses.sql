-- Reserved: filled by stored responses (seawall/responses/).
SELECT 1;
