-- Messages this service could not make sense of (malformed body, invalid order_sn).
-- They are acknowledged, never retried, and kept here for an operator to inspect.
CREATE TABLE dead_message (
    id         BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic      VARCHAR(255)  NOT NULL,
    msg_id     VARCHAR(128)  NOT NULL,
    body       BLOB          NOT NULL,
    reason     VARCHAR(512)  NOT NULL,
    created_at DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY uq_dead_message_msg_id (msg_id)
);
