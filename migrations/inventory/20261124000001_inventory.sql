-- Stock per goods. `version` counts changes (useful to audits and to spot hot rows).
CREATE TABLE inventory (
    goods_id   INT         NOT NULL PRIMARY KEY,
    stocks     INT         NOT NULL,
    version    BIGINT      NOT NULL DEFAULT 0,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    CONSTRAINT stocks_not_negative CHECK (stocks >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One row per order that ever touched stock. The row is written first in Sell, so it is
-- the order's lock and its idempotency key: DEDUCTED means the stock is out, RETURNED
-- means it came back, or (with an empty detail) that a reback arrived before any Sell and
-- a late Sell must be refused.
CREATE TABLE stock_sell_detail (
    id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_sn   VARCHAR(64) NOT NULL,
    status     VARCHAR(16) NOT NULL,
    detail     TEXT        NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uk_order_sn (order_sn),
    KEY idx_updated_at (updated_at),
    CONSTRAINT status_known CHECK (status IN ('DEDUCTED', 'RETURNED'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
