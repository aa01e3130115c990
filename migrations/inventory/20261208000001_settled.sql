-- Paid orders' deductions, settled. A DEDUCTED detail the reconciler confirmed (its order
-- was paid) stays for good, so without this table stock_sell_detail would grow by one row
-- per paid order forever. Once confirmed for INVENTORY_SETTLE_AFTER, the settle job adds
-- its lines here and deletes the row, in one transaction. Sell never touches this table,
-- so settling holds no lock an order needs. I1 becomes, per goods:
--     initial stock = stocks + Σ num of DEDUCTED details + stock_settled.nums
-- and the audit checks that the paid orders without a detail hold exactly the settled
-- totals (units and number of orders, per goods).
CREATE TABLE stock_settled (
    goods_id   INT         NOT NULL PRIMARY KEY,
    nums       BIGINT      NOT NULL DEFAULT 0,
    orders     BIGINT      NOT NULL DEFAULT 0,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The settle job's scan: confirmed deductions in (confirmed_at, id) order, where a round
-- resumes after the last row it looked at (the key ends in the primary key, so the scan
-- stops at the batch size and locks no more).
ALTER TABLE stock_sell_detail ADD KEY idx_confirmed (confirmed_at);
