-- Background responses: each one's event log (seawall/responses/background_log.py).
-- One row per Responses stream event, keyed by its sequence_number: the key makes a
-- second writer of the same event fail instead of duplicating it.
CREATE TABLE response_events (
    response_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (response_id, seq)
);
