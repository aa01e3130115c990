-- Stock as BIGINT. SetInv takes at most 2^31 - 1, but a reback adds back what its Sell took,
-- so a stock set near that limit while orders hold deductions must be able to pass it: with
-- INT, such a reback failed with "Out of range" forever. With BIGINT, leaving the range would
-- need billions of outstanding maximal deductions. Bodies of dead messages are kept whole
-- (LONGBLOB): the broker accepts bodies of up to 4 MiB.
ALTER TABLE inventory MODIFY stocks BIGINT NOT NULL;
ALTER TABLE dead_message MODIFY body LONGBLOB NOT NULL;
