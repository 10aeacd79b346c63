package projections

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionledger/ledger/domain"
)

// SessionCacheSize is how many decoded sessions the projection keeps in
// memory for validation (about 300 bytes each).
const SessionCacheSize = 1 << 17

const cacheShards = 64

// sessionCache holds decoded sessions so that validating a hot token skips
// Pebble. It must never serve a session older than what the projection has
// committed: once a batch has committed, ApplyBatch gives every cached
// session it wrote its new state (update), and a reader only inserts what
// it read if no batch committed in between (gen). The generation check and
// the insert happen under the shard's lock, which update takes too, so an
// insert can never land after the update of the write it missed. Between
// batches the cache therefore holds committed state only, which is why the
// fold may read a session from it (Projection.batchSession).
type sessionCache struct {
	seed     maphash.Seed
	gen      atomic.Uint64
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[shortString]cachedSession
}

func newSessionCache(size int) *sessionCache {
	c := &sessionCache{seed: maphash.MakeSeed(), perShard: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[shortString]cachedSession)
	}
	return c
}

// shard spreads session ids evenly over the shards. Each shard holds at
// most perShard sessions, so an uneven spread wastes the cache: the former
// hash of the first two hex characters gave some shards eight times the
// share of others, and at 1M sessions about one validate in twelve of a
// pool that fits the cache missed it.
func (c *sessionCache) shard(id string) *cacheShard {
	return &c.shards[maphash.String(c.seed, id)%cacheShards]
}

func (c *sessionCache) get(id string) (domain.SessionSnapshot, bool) {
	key, ok := short(id)
	if !ok {
		return domain.SessionSnapshot{}, false
	}
	sh := c.shard(id)
	sh.mu.RLock()
	v, ok := sh.m[key]
	sh.mu.RUnlock()
	if !ok {
		return domain.SessionSnapshot{}, false
	}
	return v.snapshot(id), true
}

// put inserts a session read from Pebble while the cache was at generation
// gen; if a batch has committed since, the read may be stale and is dropped.
func (c *sessionCache) put(s domain.SessionSnapshot, gen uint64) {
	key, v, ok := compact(s)
	if !ok {
		// Does not fit the compact form: read from Pebble each time. What
		// the cache may hold under this id is not this state, so it goes:
		// the cache answers an id with the last state it was given or not
		// at all.
		if key, short := short(s.ID); short {
			sh := c.shard(s.ID)
			sh.mu.Lock()
			delete(sh.m, key)
			sh.mu.Unlock()
		}
		return
	}
	sh := c.shard(s.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.gen.Load() != gen {
		return
	}
	if len(sh.m) >= c.perShard {
		for k := range sh.m { // evict an arbitrary entry
			delete(sh.m, k)
			break
		}
	}
	sh.m[key] = v
}

// update is called after a batch that wrote these sessions (in order, so
// the last write of a session is its state now) committed. A session the
// cache holds takes its new state; one it does not hold stays out, so a
// catch-up does not fill the cache with what nobody validates. Before,
// every write dropped its session, and the next validate of it read Pebble:
// for a burst of uses, one Pebble read per use, on validate's path. The
// generation moves first, so that a reader's insert of what it read before
// the commit is refused from now on; an insert that came in before (its
// generation still current) is overwritten here.
func (c *sessionCache) update(written []domain.SessionSnapshot) {
	if len(written) == 0 {
		return
	}
	c.gen.Add(1)
	for i := range written {
		s := &written[i]
		key, ok := short(s.ID)
		if !ok {
			continue // never cached
		}
		sh := c.shard(s.ID)
		sh.mu.Lock()
		if _, held := sh.m[key]; held {
			if _, v, ok := compact(*s); ok {
				sh.m[key] = v
			} else {
				delete(sh.m, key)
			}
		}
		sh.mu.Unlock()
	}
}

// cachedSession is a SessionSnapshot without pointers, and shortString a
// string without one. The garbage collector marks every pointer it can
// reach at every cycle; a map whose keys and values hold none is not
// scanned at all. Snapshots by value (five strings and four times each)
// made a full cache of 128k sessions hundreds of thousands of objects to
// mark at every cycle, whatever the traffic (BenchmarkSessionCacheGC: a
// full collection takes about half the time with the compact form). A hit
// copies the user id out (an allocation); the method and reason are held
// as their index in knownValues (a session with any other is not cached)
// and times as nanoseconds, which halves an entry (128 bytes, against
// 256 before; with its 48-byte key, a full cache of 128k sessions is
// about 23 MB of map slots instead of 39 MB): validate's random lookups
// miss the processor's caches less often, and the server's memory is
// that much smaller.
type cachedSession struct {
	userID                   shortString
	tokenHash                domain.TokenHash
	keepLoggedIn, mfa        bool
	knownMethod, knownReason uint8 // shortString.known of the method and the revocation reason
	idleWindow               time.Duration
	startedAt, maxExpiresAt  unixTime
	lastUseAt, revokedAt     unixTime
}

// shortString holds a string of up to 47 bytes: ids, methods and reasons.
type shortString struct {
	n uint8
	b [47]byte
}

func short(s string) (shortString, bool) {
	var out shortString
	if len(s) > len(out.b) {
		return out, false
	}
	out.n = uint8(copy(out.b[:], s))
	return out, true
}

func (s shortString) String() string { return string(s.b[:s.n]) }

// knownValues are the values of a session's method and revocation reason
// (ids are never among them); knownIndex maps each to its index plus one,
// and has 0 for any other value. The cache looks each value up once, when
// it stores a session, and a hit reads the string from the table by that
// index without an allocation.
var knownValues = []string{
	domain.SessionMethodPassword, domain.SessionMethodAPIKey, domain.SessionMethodEmailCode,
	domain.SessionMethodMagicLink, domain.MFAMethodTOTP, domain.MFAMethodRecoveryCode,
	string(domain.ReasonNone), string(domain.ReasonRevokedLogout), string(domain.ReasonRevokedOthers),
	string(domain.ReasonRevokedTerminated), string(domain.ReasonRevokedSessionLimit),
	string(domain.ReasonRevokedPasswordChanged), string(domain.ReasonRevokedPasswordReset),
	string(domain.ReasonRevokedAdmin), string(domain.ReasonRevokedUserErased),
}

var knownIndex = func() map[string]uint8 {
	m := map[string]uint8{}
	for i, v := range knownValues {
		if _, dup := m[v]; !dup {
			m[v] = uint8(i + 1)
		}
	}
	return m
}()

// unixTime is a UTC time.Time without its location pointer, in
// nanoseconds since 1970; noTime stands for the zero time (whose
// nanoseconds do not fit an int64).
type unixTime int64

const noTime = unixTime(math.MinInt64)

func toUnix(t time.Time) unixTime {
	if t.IsZero() {
		return noTime
	}
	return unixTime(t.UnixNano())
}

func (u unixTime) time() time.Time {
	if u == noTime {
		return time.Time{}
	}
	return time.Unix(0, int64(u)).UTC()
}

// compact is s in the cache's form, if it fits: ids short enough, a
// method and a reason among knownValues, every time zero or in UTC,
// within the range of UnixNano, without a monotonic reading (as Pebble
// gives them). It checks that the compact form gives s back exactly, so
// the cache can only ever answer what Pebble would.
func compact(s domain.SessionSnapshot) (shortString, cachedSession, bool) {
	key, okID := short(s.ID)
	userID, okUser := short(s.UserID)
	v := cachedSession{
		userID: userID, tokenHash: s.TokenHash,
		knownMethod: knownIndex[s.Method], knownReason: knownIndex[string(s.RevokedBy)],
		keepLoggedIn: s.KeepLoggedIn, mfa: s.MFA, idleWindow: s.IdleWindow,
		startedAt: toUnix(s.StartedAt), maxExpiresAt: toUnix(s.MaxExpiresAt),
		lastUseAt: toUnix(s.LastUseAt), revokedAt: toUnix(s.RevokedAt),
	}
	if !okID || !okUser || v.knownMethod == 0 || v.knownReason == 0 {
		return key, cachedSession{}, false
	}
	return key, v, v.snapshot(s.ID) == s
}

// snapshot is the session back, with id as its id.
func (v cachedSession) snapshot(id string) domain.SessionSnapshot {
	return domain.SessionSnapshot{
		ID: id, UserID: v.userID.String(), TokenHash: v.tokenHash, Method: knownValues[v.knownMethod-1],
		KeepLoggedIn: v.keepLoggedIn, MFA: v.mfa, IdleWindow: v.idleWindow,
		StartedAt: v.startedAt.time(), MaxExpiresAt: v.maxExpiresAt.time(),
		LastUseAt: v.lastUseAt.time(), RevokedAt: v.revokedAt.time(),
		RevokedBy: domain.Reason(knownValues[v.knownReason-1]),
	}
}
