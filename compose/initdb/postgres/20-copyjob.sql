-- Run once by the postgres image on an empty data folder (docker-entrypoint-initdb.d), as the superuser.
-- The copyjob user with what change capture needs (README: Change data capture from PostgreSQL → Setting up
-- the source): LOGIN and REPLICATION; it owns the shop tables, so it may create their publication.
CREATE ROLE copyjob LOGIN REPLICATION PASSWORD 'copyjob';
CREATE DATABASE shop OWNER copyjob;
CREATE DATABASE warehouse OWNER copyjob;

\connect shop
SET ROLE copyjob;
CREATE TABLE public.customers (
  id int PRIMARY KEY,
  name text NOT NULL,
  email text,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.orders (
  id int PRIMARY KEY,
  customer_id int NOT NULL REFERENCES public.customers (id),
  amount numeric(10, 2) NOT NULL,
  status text NOT NULL DEFAULT 'new',
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_updated_at ON public.orders (updated_at);
INSERT INTO public.customers (id, name, email) VALUES
  (1, 'Alice', 'alice@example.com'), (2, 'Bob', 'bob@example.com'), (3, 'Carol', NULL);
INSERT INTO public.orders (id, customer_id, amount)
  SELECT g, g % 3 + 1, round((g * 7.31)::numeric % 500, 2) FROM generate_series(1, 1000) g;
