-- Stage timings of each request (seawall/observe/records.py `spans`): a JSON
-- list of [name, start_ns, end_ns], the request itself first; the console
-- draws them as a waterfall. The SQLite twin is added at open.
ALTER TABLE traces ADD COLUMN spans TEXT;
