-- Run once by the mariadb image on an empty data folder (docker-entrypoint-initdb.d), as root, in database shop.
-- The change capture user with the grants the README lists (Change data capture from MySQL and MariaDB →
-- Privileges); the binlog settings are in docker-compose.yml's command.
CREATE USER IF NOT EXISTS 'cdc'@'%' IDENTIFIED BY 'copyjob';
GRANT SELECT ON shop.* TO 'cdc'@'%';                          -- the snapshot and reflection
GRANT REPLICATION SLAVE ON *.* TO 'cdc'@'%';                  -- read the binlog
GRANT BINLOG MONITOR ON *.* TO 'cdc'@'%';                     -- its position (REPLICATION CLIENT before 10.5)

CREATE TABLE IF NOT EXISTS shop.customers (
  id INT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(200),
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;
INSERT IGNORE INTO shop.customers (id, name, email) VALUES
  (1, 'Alice', 'alice@example.com'), (2, 'Bob', 'bob@example.com'), (3, 'Carol', NULL);
