-- pgbench's side of `./scripts/bench --bench credits`: the naive design the service is held
-- against, one transaction per consume: the single-row debit and a ledger row with its
-- idempotency key (unique per organization, as the service's).
--   pgbench -n -c 64 -j 2 -T 5 -f naive.sql -D spread=1000 postgres://...
\set organization random(0, :spread - 1)
\set key random(0, 9223372036854775806)
BEGIN;
UPDATE bench_balances SET balance = balance - 1
  WHERE organization_id = 'org_' || lpad(:organization::text, 4, '0') AND balance >= 1;
INSERT INTO bench_ledger (organization_id, amount, idempotency_key)
  VALUES ('org_' || lpad(:organization::text, 4, '0'), -1, 'naive-' || :key);
END;
