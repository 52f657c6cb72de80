-- Run once by the postgres container on its first start: one database per bank,
-- and the saga log that the transfers service's replicas and its worker share.
CREATE DATABASE bank_a;
CREATE DATABASE bank_b;
CREATE DATABASE saga_log;
