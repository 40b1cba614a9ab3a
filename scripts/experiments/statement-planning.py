#!/usr/bin/env python3
"""Issue 22's experiment: does planning each statement once save PostgreSQL CPU per event?

The same batch (4 subscription events of ~3 KB: their ledger rows, the customers' advisory
locks, a guarded upsert of the subscriptions) written three ways, from THREADS connections,
PostgreSQL's CPU per event read from /proc (the whole cluster, as the ingest bench does):

- literal:  one message of statements with the values written in (what billing-sync sends);
- execute:  one message of EXECUTEs of statements each connection PREPAREd once (array
            literals as parameters): planned once, still one round trip;
- prepared: the extended protocol, statements prepared once with array parameters, one round
            trip each, in a transaction (what a driver's prepared statements do).

Run (needs psycopg: `pip install "psycopg[binary]"`, and a migrated database):
  ./scripts/with-postgres bash -c 'psql "$BILLING_SYNC_TEST_POSTGRES_URL" -qc "create database exp" &&
    U=$(echo "$BILLING_SYNC_TEST_POSTGRES_URL" | sed "s#/[^/?]*\(?.*\)\?\$#/exp#") &&
    DATABASE_URL=$U cargo run -q -p billing-sync -- migrate up &&
    DATABASE_URL=$U BATCHES=3000 ROUNDS=3 python3 scripts/experiments/statement-planning.py prepared execute literal'
"""
import json, os, random, string, sys, threading, time, datetime
import psycopg

URL = os.environ["DATABASE_URL"]
BATCH = 4
THREADS = int(os.environ.get("THREADS", "8"))
BATCHES = int(os.environ.get("BATCHES", "600"))

def payload(i, sub, cus):
    obj = {"id": sub, "object": "subscription", "customer": cus, "status": "active",
           "items": {"object": "list", "data": [{"id": f"si_{i}_{k}", "object": "subscription_item",
             "price": {"id": f"price_{k}", "object": "price", "product": f"prod_{k}", "unit_amount": 1900,
                       "currency": "usd", "recurring": {"interval": "month", "interval_count": 1},
                       "metadata": {"note": "x" * 200}}, "quantity": 1} for k in range(3)]},
           "metadata": {"organization_id": f"org_{i}"}, "current_period_start": 1700000000,
           "current_period_end": 1702592000, "cancel_at_period_end": False, "description": "y" * 600}
    return {"id": f"evt_{i}", "object": "event", "type": "customer.subscription.updated",
            "created": 1700000000 + i, "data": {"object": obj}, "livemode": False}

LEDGER_COLS = "provider, event_id, event_type, api_version, livemode, event_created, payload, received_at, processed_at, status, error, attempts"
SUB_COLS = "id, raw, ordering_key, ordering_rank, deleted_at, synced_at, livemode, customer_id, status, cancel_at_period_end, cancel_at, canceled_at, ended_at, trial_end, current_period_start, current_period_end, items, organization_id"
SUB_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in SUB_COLS.split(", ")[1:-1]) + \
  ", organization_id = COALESCE(excluded.organization_id, stripe_subscriptions.organization_id)"
GUARD = ("stripe_subscriptions.ordering_rank < 2 OR excluded.ordering_rank = 2) AND "
         "(excluded.ordering_key > stripe_subscriptions.ordering_key OR (excluded.ordering_key = stripe_subscriptions.ordering_key AND "
         "(excluded.ordering_rank > stripe_subscriptions.ordering_rank OR (excluded.ordering_rank = 1 AND stripe_subscriptions.ordering_rank = 1))))")

def q(s):
    return "NULL" if s is None else "'" + str(s).replace("'", "''") + "'"

def rows_for(batch_no, tag):
    out = []
    for j in range(BATCH):
        i = batch_no * BATCH + j
        sub, cus = f"sub_{tag}{i}", f"cus_{tag}{i}"
        body = json.dumps(payload(i, sub, cus))
        raw = json.dumps(json.loads(body)["data"]["object"])
        out.append(dict(event_id=f"evt_{tag}{i}", body=body, sub=sub, cus=cus, raw=raw, key=1700000000 + i,
                        items=json.dumps([{"price": "price_0", "quantity": 1}]), org=f"org_{i}"))
    return out

def message_literal(rows):
    now = "'2026-12-02T00:00:00Z'"
    ledger = ", ".join(f"('stripe', {q(r['event_id'])}, 'customer.subscription.updated', NULL, false, {r['key']}, {q(r['body'])}, {now}, {now}, 'processed', NULL, 1)" for r in rows)
    ids = ", ".join(q(r["cus"]) for r in rows)
    subs = ", ".join(f"({q(r['sub'])}, {q(r['raw'])}, {r['key']}, 1, NULL, {now}, false, {q(r['cus'])}, 'active', false, NULL, NULL, NULL, NULL, {now}, {now}, CAST({q(r['items'])} AS jsonb), COALESCE({q(r['org'])}, (SELECT organization_id FROM stripe_customers WHERE id = {q(r['cus'])})))" for r in rows)
    return (f"WITH inserted AS (INSERT INTO webhook_events ({LEDGER_COLS}) VALUES {ledger} ON CONFLICT DO NOTHING RETURNING provider, event_id) "
            f"SELECT 1 / (CASE WHEN count(*) = {len(rows)} THEN 1 ELSE 0 END) FROM inserted;\n"
            f"SELECT pg_advisory_xact_lock(k) FROM (SELECT hashtextextended(id, 0) AS k FROM unnest(ARRAY[{ids}]::text[]) AS id ORDER BY 1 OFFSET 0) s;\n"
            f"INSERT INTO stripe_subscriptions ({SUB_COLS}) VALUES {subs} ON CONFLICT (id) DO UPDATE SET {SUB_UPDATE} WHERE ({GUARD};\n")

PREP_LEDGER = (f"INSERT INTO webhook_events ({LEDGER_COLS}) SELECT 'stripe', e, 'customer.subscription.updated', NULL, false, c, p, now(), now(), 'processed', NULL, 1 "
               "FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(e, c, p) ON CONFLICT DO NOTHING RETURNING provider, event_id")
PREP_LOCK = "SELECT pg_advisory_xact_lock(k) FROM (SELECT hashtextextended(id, 0) AS k FROM unnest($1::text[]) AS id ORDER BY 1 OFFSET 0) s"
PREP_SUBS = (f"INSERT INTO stripe_subscriptions ({SUB_COLS}) SELECT s, r, k, 1, NULL, now(), false, c, 'active', false, NULL, NULL, NULL, NULL, now(), now(), i::jsonb, "
             "COALESCE(o, (SELECT organization_id FROM stripe_customers WHERE id = c)) FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS u(s, r, k, c, i, o) "
             f"ON CONFLICT (id) DO UPDATE SET {SUB_UPDATE} WHERE ({GUARD}")

def arr(values):
    return "'{" + ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("'", "''") + '"' for v in values) + "}'"

def message_execute(rows):
    led = f"EXECUTE ledger({arr([r['event_id'] for r in rows])}, {arr([r['key'] for r in rows])}, {arr([r['body'] for r in rows])})"
    n = len(rows)
    return (f"{led};\n"
            f"EXECUTE lock({arr([r['cus'] for r in rows])});\n"
            f"EXECUTE subs({arr([r['sub'] for r in rows])}, {arr([r['raw'] for r in rows])}, {arr([r['key'] for r in rows])}, {arr([r['cus'] for r in rows])}, {arr([r['items'] for r in rows])}, {arr([r['org'] for r in rows])});\n")

def cluster_cpu(postmaster):
    def fields(pid):
        try:
            s = open(f"/proc/{pid}/stat").read()
        except OSError:
            return None
        return s.rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields(postmaster)[11:15])
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = fields(int(d))
            if f and f[1] == str(postmaster):
                total += sum(int(x) for x in f[11:15])
    return total / os.sysconf("SC_CLK_TCK")

def run(variant, tag):
    work = list(range(BATCHES))
    lock = threading.Lock()
    def worker():
        with psycopg.connect(URL, autocommit=True, cursor_factory=psycopg.RawCursor) as conn:
            if variant == "execute":
                conn.execute(f"PREPARE ledger(text[], bigint[], text[]) AS {PREP_LEDGER}".replace("$1::text[]", "$1").replace("$2::bigint[]", "$2").replace("$3::text[]", "$3"))
                conn.execute(f"PREPARE lock(text[]) AS {PREP_LOCK}".replace("$1::text[]", "$1"))
                conn.execute("PREPARE subs(text[], text[], bigint[], text[], text[], text[]) AS " + PREP_SUBS)
            while True:
                with lock:
                    if not work:
                        return
                    b = work.pop()
                rows = rows_for(b, tag)
                if variant == "literal":
                    conn.execute(message_literal(rows))
                elif variant == "execute":
                    conn.execute(message_execute(rows))
                else:
                    with conn.transaction():
                        got = conn.execute(PREP_LEDGER, ([r["event_id"] for r in rows], [r["key"] for r in rows], [r["body"] for r in rows]), prepare=True).fetchall()
                        assert len(got) == len(rows)
                        conn.execute(PREP_LOCK, ([r["cus"] for r in rows],), prepare=True)
                        conn.execute(PREP_SUBS, ([r["sub"] for r in rows], [r["raw"] for r in rows], [r["key"] for r in rows], [r["cus"] for r in rows], [r["items"] for r in rows], [r["org"] for r in rows]), prepare=True)
    with psycopg.connect(URL) as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        postmaster = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    before, t0 = cluster_cpu(postmaster), time.time()
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = time.time() - t0
    cpu = cluster_cpu(postmaster) - before
    events = BATCHES * BATCH
    print(f"{variant:<9} {events} events in {elapsed:5.2f} s: PostgreSQL {cpu * 1e6 / events:6.0f} µs/event")

for round_no in range(int(os.environ.get("ROUNDS", "2"))):
    for variant in sys.argv[1:]:
        run(variant, f"{variant[0]}{round_no}x")
