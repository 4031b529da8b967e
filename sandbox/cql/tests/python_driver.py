"""The DataStax Python driver (cassandra-driver 3.x, protocol v4) against the CQL stand-in.

Usage: python_driver.py PORT. Prints "ok" when every step passed; raises otherwise.
"""
import sys
import time

from cassandra import InvalidRequest
from cassandra.cluster import Cluster
from cassandra.query import BatchStatement, SimpleStatement

port = int(sys.argv[1])
cluster = Cluster(["127.0.0.1"], port=port, protocol_version=4, connect_timeout=5)
session = cluster.connect()
assert cluster.metadata.cluster_name == "telepipe sandbox", cluster.metadata.cluster_name

session.execute(
    "CREATE KEYSPACE IF NOT EXISTS py WITH replication = "
    "{'class': 'SimpleStrategy', 'replication_factor': 1}"
)
session.set_keyspace("py")
session.execute(
    "CREATE TABLE IF NOT EXISTS events (bot bigint, seq int, body text, seen boolean, "
    "PRIMARY KEY ((bot), seq))"
)
# The driver read the new table into its schema metadata.
table = cluster.metadata.keyspaces["py"].tables["events"]
assert [c.name for c in table.partition_key] == ["bot"]
assert [c.name for c in table.clustering_key] == ["seq"]

insert = session.prepare("INSERT INTO events (bot, seq, body, seen) VALUES (?, ?, ?, ?)")
for seq in range(25):
    session.execute(insert, (7, seq, "event %d" % seq, seq % 2 == 0))

# Paging: 25 rows in pages of 10.
select = SimpleStatement("SELECT seq, body FROM events WHERE bot = %s", fetch_size=10)
rows = list(session.execute(select, (7,)))
assert [r.seq for r in rows] == list(range(25)), rows

# Filtering is refused unless asked for, with the server's words.
try:
    session.execute("SELECT * FROM events WHERE seen = true")
    raise AssertionError("a filtering query was accepted")
except InvalidRequest as e:
    assert "ALLOW FILTERING" in str(e), e
seen = session.execute("SELECT seq FROM events WHERE bot = 7 AND seen = true ALLOW FILTERING")
assert len(list(seen)) == 13

# Lightweight transactions.
lwt = session.execute("INSERT INTO events (bot, seq, body) VALUES (8, 1, 'a') IF NOT EXISTS")
assert lwt.was_applied
lwt = session.execute("INSERT INTO events (bot, seq, body) VALUES (8, 1, 'b') IF NOT EXISTS")
assert not lwt.was_applied
lwt = session.execute("UPDATE events SET body = 'c' WHERE bot = 8 AND seq = 1 IF body = 'a'")
assert lwt.was_applied
assert session.execute("SELECT body FROM events WHERE bot = 8 AND seq = 1").one().body == "c"

# A logged batch, and a TTL that expires.
batch = BatchStatement()
batch.add(insert, (9, 1, "x", True))
batch.add(SimpleStatement("INSERT INTO events (bot, seq, body) VALUES (9, 2, 'y') USING TTL 1"))
session.execute(batch)
assert len(list(session.execute("SELECT * FROM events WHERE bot = 9"))) == 2
time.sleep(1.3)
assert [r.seq for r in session.execute("SELECT seq FROM events WHERE bot = 9")] == [1]

cluster.shutdown()
print("ok")
