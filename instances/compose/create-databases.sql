-- Run once by the postgres container on its first start: one database per bank.
CREATE DATABASE bank_a;
CREATE DATABASE bank_b;
