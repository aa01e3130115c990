-- AIP-155 idempotency key of CreateOrder, unique per user. Written in the order's local
-- transaction, so an order and its key commit together; NULL (no key) repeats freely.
ALTER TABLE order_info
    ADD COLUMN request_id VARCHAR(64) NULL,
    ADD UNIQUE KEY uk_user_request (user_id, request_id);
