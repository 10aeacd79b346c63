// Package command holds the write side of the ledger: one handler per
// command (signup, login, logout, logout-others, terminate), each with a
// single Handle method, built together by New, which refuses missing
// dependencies. Handlers decide through the domain aggregate and write
// through the Users repository, which appends with optimistic concurrency
// at a time that never goes back in the user's history, retries on fresh
// state after a conflict, and returns only once this instance's projection
// has accepted the result. The package sees the log and the projection only
// through the ports it declares (see handlers/ports); ids, seals and
// signatures are the log adapter's business.
package command
