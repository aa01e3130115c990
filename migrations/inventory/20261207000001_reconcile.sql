-- The reconciler (DESIGN.md §13) asks order_srv about DEDUCTED details older than its
-- horizon. confirmed_at: its order was paid, the deduction stays for good, never asked
-- about again. ask_after: its order was unpaid when asked; not before then again.
ALTER TABLE stock_sell_detail
    ADD COLUMN confirmed_at DATETIME(6) NULL,
    ADD COLUMN ask_after DATETIME(6) NULL,
    ADD KEY idx_reconcile (status, confirmed_at, created_at);
