"""Metering and billing: prices, charges, budgets, invoices (rating is pure; the ledger keeps
the records)."""
