-- Who closed an unpaid order, and when: its pay-timeout message ('pay_timeout'), the buyer
-- ('cancel') or the overdue-order sweep ('sweep', DESIGN.md §13: a pay-timeout message
-- lost or late). The audit reports sweep closes apart, so the sweep never hides a timer
-- that stopped; lateness is closed_at - created_at - the pay timeout.
ALTER TABLE order_info
    ADD COLUMN closed_by VARCHAR(16) NULL,
    ADD COLUMN closed_at DATETIME(6) NULL,
    ADD CONSTRAINT closed_by_known CHECK (closed_by IN ('pay_timeout', 'cancel', 'sweep')),
    -- The sweep's scan: unpaid orders, oldest first.
    ADD KEY idx_status_created (status, created_at);
