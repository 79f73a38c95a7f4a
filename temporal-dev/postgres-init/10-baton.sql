-- Baton's own database (audit ledger, blackboard, systems of record) next to Temporal's.
-- Run by the postgres image on the first start of an empty volume only.
CREATE DATABASE baton OWNER temporal;
