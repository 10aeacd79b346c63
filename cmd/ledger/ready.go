package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sessionledger/ledger/domain"
	"github.com/sessionledger/ledger/handlers/httpapi"
	"github.com/sessionledger/ledger/projections"
)

func (s *Service) ready(ctx context.Context) (httpapi.Readiness, error) {
	st := s.fresh.Status()
	detail := httpapi.Readiness{
		AppliedSeq: st.AppliedSeq, StreamLastSeq: st.StreamLastSeq, LagEvents: st.LagEvents,
		LagSeconds: st.Lag.Seconds(), MaxLagSeconds: st.MaxLag.Seconds(),
	}
	if !st.FreshAsOf.IsZero() {
		detail.FreshAsOf = st.FreshAsOf.UTC().Format(time.RFC3339Nano)
	}
	if rejected, total, err := s.proj.Rejected(10); err == nil && total > 0 {
		// A rejected message cannot be repaired (the log is immutable) and
		// is an attack or a bug: the instance stays ready, but says so.
		detail.RejectedEvents, detail.Rejected, detail.Degraded = total, rejected, true
	}
	if findings, _ := s.integ.Findings(); len(findings) > 0 {
		detail.StreamFindings = findings
		return detail, &httpapi.NotReady{Reason: "STREAM_TAMPERED", Err: fmt.Errorf("the ledger stream is no longer append-only and complete: %s", strings.Join(findings, "; "))}
	}
	if err := s.proj.Blocked(); err != nil {
		reason := "PROJECTION_BLOCKED"
		if errors.Is(err, domain.ErrKeyUnavailable) {
			reason = "SIGNING_KEY_UNAVAILABLE"
		}
		return detail, &httpapi.NotReady{Reason: reason, Err: err}
	}
	if err := s.fresh.Check(); err != nil {
		return detail, err
	}
	last, err := s.ll.store.LastSeq(ctx)
	if err != nil {
		return detail, fmt.Errorf("jetstream unreachable: %w", err)
	}
	detail.StreamLastSeq = last
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err = s.proj.WaitFor(wctx, last)
	detail.AppliedSeq = s.proj.Applied()
	lag := last - min(last, detail.AppliedSeq)
	detail.Lag = &lag
	if err != nil {
		return detail, errors.New("projection is behind the stream")
	}
	return detail, nil
}

// integrityEvery checks the stream often enough that tampering shows
// within the freshness bound.
func integrityEvery(maxLag time.Duration) time.Duration {
	return max(maxLag/5, 100*time.Millisecond)
}

func (s *Service) digests() (httpapi.Digests, error) {
	return projectionDigests(s.proj)
}

// projectionDigests is what `ledger audit digest` and GET /v1/audit/digest
// report.
func projectionDigests(p *projections.Projection) (httpapi.Digests, error) {
	state, applied, err := p.DigestAt()
	if err != nil {
		return httpapi.Digests{}, err
	}
	stream, _ := p.StreamDigest()
	cps, err := p.DigestCheckpoints()
	if err != nil {
		return httpapi.Digests{}, err
	}
	d := httpapi.Digests{AppliedSeq: applied, StateDigest: state, StreamDigest: stream.String(), Checkpoints: make([]httpapi.DigestCheckpoint, 0, len(cps))}
	for _, c := range cps {
		d.Checkpoints = append(d.Checkpoints, httpapi.DigestCheckpoint{Seq: c.Seq, StreamDigest: c.Digest.String()})
	}
	if d.Rejected, d.RejectedEvents, err = p.Rejected(0); err != nil {
		return httpapi.Digests{}, err
	}
	return d, nil
}
