// Package natsauth decides who may do what on the NATS that holds the
// ledger stream, and how a ledger process proves who it is.
//
// Invariants:
//
//   - An embedded server that has users admits no anonymous connection, not
//     even an in-process one: every client presents an nkey the server
//     knows (there is no no_auth_user fallback).
//   - The writer identity (writer.nk) has every right. It is what ledger
//     instances connect with; nothing else should hold its seed.
//   - The reader identity (reader.nk) can only read the ledger stream: stream
//     info, single messages, and consumers it creates itself (ordered,
//     ephemeral or pull), fetched and acknowledged. It cannot publish on
//     ledger.>, change, purge or delete the stream or its messages, delete
//     consumers, or list them, so it cannot learn the names of the ledger's
//     own consumers and steal or disturb their deliveries. Publish rights
//     are an allow-list: a JetStream API added by a later server is refused
//     until it is listed here.
//   - The reader may subscribe only to _INBOX.>, where replies to its own
//     requests arrive. Ledger connections use WriterInboxPrefix instead, so
//     a reader subscribed to _INBOX.> does not see their replies either.
//   - Seeds live in files of mode 0600 (a directory LoadOrCreate makes is
//     0700); a seed or creds file that group or others can read is
//     refused, as ssh refuses such a private key. No seed is ever logged
//     or put into an error.
//
// NATS permissions are the first layer only: events are also signed, so
// write access to NATS alone does not produce an event the ledger accepts.
package natsauth
