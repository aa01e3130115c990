-- Bodies of dead messages are kept whole: the broker accepts bodies of up to 4 MiB, and a
-- BLOB silently kept only the first 65,535 bytes.
ALTER TABLE dead_message MODIFY body LONGBLOB NOT NULL;
