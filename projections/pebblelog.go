package projections

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// quietPebble routes Pebble's own logging into slog: its info lines are
// debug noise for us, its errors are not.
type quietPebble struct{ log *slog.Logger }

func (q quietPebble) Infof(format string, args ...any) {
	q.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (q quietPebble) Errorf(format string, args ...any) {
	q.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (q quietPebble) Fatalf(format string, args ...any) {
	q.log.Log(context.Background(), slog.LevelError+4, fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(1)
}
