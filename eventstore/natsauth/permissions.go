package natsauth

import "github.com/nats-io/nats-server/v2/server"

// ReaderInboxes is where a reader receives replies and consumer
// deliveries: the default inbox prefix of nats.go and the nats CLI.
const ReaderInboxes = "_INBOX.>"

// WriterInboxPrefix is the inbox prefix of ledger connections
// (nats.CustomInboxPrefix). Replies to the ledger carry the names of its
// consumers (in ack subjects) and a reader may subscribe to _INBOX.>; with
// another prefix it never sees them.
const WriterInboxPrefix = "_INBOX_LEDGER"

// ReaderPermissions lets a client read stream and nothing else.
//
// Publish, as an allow-list (the JetStream API of nats-server 2.10+, and
// $JS.ACK / $JS.FC in both the v1 and v2 reply formats):
//
//	$JS.API.INFO                                  account info (nats.go, the nats CLI ask first)
//	$JS.API.STREAM.INFO.<stream>                  Stream.Info
//	$JS.API.STREAM.MSG.GET.<stream>               GetMsg, GetLastMsgForSubject
//	$JS.API.DIRECT.GET.<stream>[.>]               the same, when the stream allows direct gets (mirrors do)
//	$JS.API.CONSUMER.CREATE.<stream>              ephemeral consumer, older clients
//	$JS.API.CONSUMER.CREATE.<stream>.*[.>]        named/ordered consumer, with or without a filter
//	$JS.API.CONSUMER.INFO.<stream>.*              info of a consumer it knows the name of
//	$JS.API.CONSUMER.MSG.NEXT.<stream>.*          fetch (pull) from it
//	$JS.ACK.<stream>.>, $JS.ACK.*.*.<stream>.>    acknowledge what it was delivered
//	$JS.FC.<stream>.>, $JS.FC.*.*.<stream>.>      flow control replies of push consumers
//
// Subscribe: _INBOX.> only.
//
// Left out on purpose: publishing on ledger.> (or anything else), stream
// create/update/delete/purge, message delete, consumer delete/pause/reset/
// unpin, consumer list and names (the ledger's consumers stay unknown to
// it), stream names/list, and snapshots. A reader's ordered consumer tries
// to delete its previous consumer when it resets; that is refused and the
// old one expires after its inactive threshold.
func ReaderPermissions(stream string) *server.Permissions {
	api := "$JS.API."
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			api + "INFO",
			api + "STREAM.INFO." + stream,
			api + "STREAM.MSG.GET." + stream,
			api + "DIRECT.GET." + stream,
			api + "DIRECT.GET." + stream + ".>",
			api + "CONSUMER.CREATE." + stream,
			api + "CONSUMER.CREATE." + stream + ".*",
			api + "CONSUMER.CREATE." + stream + ".*.>",
			api + "CONSUMER.INFO." + stream + ".*",
			api + "CONSUMER.MSG.NEXT." + stream + ".*",
			"$JS.ACK." + stream + ".>",
			"$JS.ACK.*.*." + stream + ".>",
			"$JS.FC." + stream + ".>",
			"$JS.FC.*.*." + stream + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{ReaderInboxes}},
	}
}
