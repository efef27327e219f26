-- When a throttled login was last audited, per throttling scope ("account:<email>" or
-- "ip:<address or /64>"): throttled attempts are audited once per window, not once per
-- request, so a flood of attempts cannot fill the append-only audit table.
CREATE TABLE login_throttle_notes (
    scope_key  TEXT PRIMARY KEY,
    until      TIMESTAMPTZ NOT NULL
);
