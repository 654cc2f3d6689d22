from pathlib import Path
from tests.helpers import copyjob, write_job
from tests.pg_cdc import table_fingerprint


def test_direct_key_change(tmp_path: Path, mariadb_server, mariadb_url: str, pg_url2: str) -> None:
    db = mariadb_url.rsplit("/", 1)[1]
    mariadb_server.execute("CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(20) NOT NULL) ENGINE=InnoDB", db)
    mariadb_server.execute("INSERT INTO orders VALUES (1,'a'),(2,'b'),(30,'c')", db)
    job = write_job(tmp_path / "j.yaml", {"job": "scratch" + db, "source": {"url": mariadb_url},
                                          "destination": {"url": pg_url2},
                                          "copy": {"mode": "cdc", "update_method": "merge"},
                                          "tables": [{"name": "orders"}]})
    assert copyjob("run", job).code == 0
    mariadb_server.execute("UPDATE orders SET id = 2000 WHERE id = 30", db)
    r = copyjob("run", job)
    assert r.code == 0, r.output
    assert table_fingerprint(pg_url2, "orders") == [tuple(x) for x in mariadb_server.execute("SELECT * FROM orders ORDER BY 1", db)]
