// Package command holds the write side of the ledger: one handler per
// command (signup, login, logout, logout-others, terminate), each with a
// single Handle method. Handlers decide through the domain aggregate and
// write through Users.Update, which appends with optimistic concurrency and
// returns only once this instance's projection shows the result.
package command
