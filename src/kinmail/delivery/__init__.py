"""Local delivery: aliases, the group's and the user's Sieve filters, vacation, redirect, store."""
