-- Server-side price list: CreateOrder prices carts from here, never from the client.
CREATE TABLE goods (
    id          INT          NOT NULL PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    price_cents BIGINT       NOT NULL,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    CONSTRAINT price_not_negative CHECK (price_cents >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE shopping_cart (
    id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    goods_id   INT         NOT NULL,
    nums       INT         NOT NULL,
    checked    BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uk_user_goods (user_id, goods_id),
    CONSTRAINT nums_positive CHECK (nums > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE order_info (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_sn    VARCHAR(64)  NOT NULL,
    user_id     BIGINT       NOT NULL,
    status      VARCHAR(20)  NOT NULL,
    total_cents BIGINT       NOT NULL,
    address     VARCHAR(200) NOT NULL,
    name        VARCHAR(40)  NOT NULL,
    mobile      VARCHAR(20)  NOT NULL,
    post        VARCHAR(200) NOT NULL DEFAULT '',
    pay_type    VARCHAR(20)  NOT NULL DEFAULT '',
    trade_no    VARCHAR(100) NOT NULL DEFAULT '',
    pay_time    DATETIME(6)  NULL,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uk_order_sn (order_sn),
    KEY idx_user_created (user_id, created_at),
    CONSTRAINT status_known CHECK (status IN ('WAIT_BUYER_PAY', 'PAYING', 'TRADE_SUCCESS', 'TRADE_FINISHED', 'TRADE_CLOSED'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Name and price are snapshots taken when the order was placed.
CREATE TABLE order_goods (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id    BIGINT       NOT NULL,
    goods_id    INT          NOT NULL,
    goods_name  VARCHAR(100) NOT NULL,
    price_cents BIGINT       NOT NULL,
    nums        INT          NOT NULL,
    KEY idx_order (order_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The check-back barrier (DESIGN.md §5): whichever of the local transaction ('committed')
-- and a broker check-back ('aborted') inserts the order_sn first decides the outcome.
CREATE TABLE tx_barrier (
    order_sn   VARCHAR(64) NOT NULL PRIMARY KEY,
    outcome    VARCHAR(16) NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY idx_created_at (created_at),
    CONSTRAINT outcome_known CHECK (outcome IN ('committed', 'aborted'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
