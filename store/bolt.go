package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket layout of the bbolt file (format version 1):
//
//	keys     apiKeyId                      → JSON Key
//	hashes   SHA-256(secret) (32 bytes)    → apiKeyId + validUntil + the key's facts (boltfacts.go)
//	wsidx    workspaceId 0x00 seq (8 BE)   → apiKeyId            (creation order, for List)
//	events   workspaceId 0x00 seq (8 BE)   → JSON Event
//	kevents  apiKeyId 0x00 seq (8 BE)      → JSON Event          (events of one key)
//	used     apiKeyId                      → lastUsedAt (8 bytes BE, Unix seconds)
//	meta     "version"                     → the format version (4 bytes BE)
//
// lastUsedAt has a bucket of its own so that its flushes, which may touch
// every key in use each minute, rewrite small values in a small bucket and
// never read or rewrite the key records.
//
// The JSON Key is the record of a key; a hashes value repeats what a
// verification needs of it (apikey.Facts), so that Lookup reads one small
// value. Every write of a field of the facts rewrites the hashes values of
// all the key's secrets in the same transaction.
//
// OpenBolt writes the version into a new file and refuses a file of any
// other version, or of none: keygate converts no key file.
var (
	bKeys    = []byte("keys")
	bHashes  = []byte("hashes")
	bWsIdx   = []byte("wsidx")
	bEvents  = []byte("events")
	bKEvents = []byte("kevents")
	bUsed    = []byte("used")
	bMeta    = []byte("meta")
	buckets  = [][]byte{bKeys, bHashes, bWsIdx, bEvents, bKEvents, bUsed, bMeta}
	// metaVersion is the key of the format version in bMeta.
	metaVersion = []byte("version")
)

// FormatVersion is the version of the bbolt file format this build reads
// and writes.
const FormatVersion = 1

// BoltOptions tune the bbolt backend; zero values take the defaults.
type BoltOptions struct {
	// LockTimeout bounds the wait for another process's lock on the file
	// (default 3 s).
	LockTimeout time.Duration
	// MaxBatchSize and MaxBatchDelay tune how concurrent creates are
	// coalesced into one fsync (defaults 256 and 2 ms).
	MaxBatchSize  int
	MaxBatchDelay time.Duration
	// MaxSize caps the file size in bytes; 0 = no cap. Writes that would
	// pass it fail with ErrFull.
	MaxSize int
}

// Bolt is the embedded bbolt backend.
type Bolt struct {
	db *bolt.DB
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed, with its directory) the bbolt file at
// path. A file locked by another process fails after LockTimeout; a file of
// another format version than FormatVersion is refused and left as it is.
func OpenBolt(path string, o BoltOptions) (*Bolt, error) {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 3 * time.Second
	}
	if o.MaxBatchSize <= 0 {
		o.MaxBatchSize = 256
	}
	if o.MaxBatchDelay <= 0 {
		o.MaxBatchDelay = 2 * time.Millisecond
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open key db %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      o.LockTimeout,
		FreelistType: bolt.FreelistMapType,
		MaxSize:      o.MaxSize,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open key db %s: locked by another process (waited %s)", path, o.LockTimeout)
		}
		return nil, fmt.Errorf("open key db %s: %w", path, err)
	}
	db.MaxBatchSize = o.MaxBatchSize
	db.MaxBatchDelay = o.MaxBatchDelay
	fresh := false
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		fresh, err = checkVersion(tx)
		return err
	})
	if err == nil && fresh {
		err = db.Update(initFile)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open key db %s: %w", path, mapErr(err))
	}
	return &Bolt{db: db}, nil
}

// checkVersion reports whether the file is new (no bucket at all), or
// else an error unless its meta bucket holds FormatVersion.
func checkVersion(tx *bolt.Tx) (fresh bool, err error) {
	var v []byte
	if m := tx.Bucket(bMeta); m != nil {
		v = m.Get(metaVersion)
	}
	switch {
	case len(v) == 4 && binary.BigEndian.Uint32(v) == FormatVersion:
		return false, nil
	case len(v) == 4:
		return false, fmt.Errorf("format version %d, and this keygate reads version %d only: use the keygate that wrote it", binary.BigEndian.Uint32(v), FormatVersion)
	case v != nil:
		return false, fmt.Errorf("format version unreadable (%d bytes), and this keygate reads version %d only", len(v), FormatVersion)
	}
	empty := true
	tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
	if !empty {
		return false, fmt.Errorf("no format version (a file of a development build of keygate, or not keygate's), and this keygate reads version %d only", FormatVersion)
	}
	return true, nil
}

// initFile makes a new file one of FormatVersion.
func initFile(tx *bolt.Tx) error {
	for _, b := range buckets {
		if _, err := tx.CreateBucket(b); err != nil {
			return err
		}
	}
	return tx.Bucket(bMeta).Put(metaVersion, binary.BigEndian.AppendUint32(nil, FormatVersion))
}

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrMaxSizeReached), errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w: %v", ErrFull, err)
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return ErrClosed
	}
	return err
}

func seqKey(prefix string, seq uint64) []byte {
	k := make([]byte, 0, len(prefix)+9)
	k = append(k, prefix...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// Create implements Store.
func (b *Bolt) Create(ctx context.Context, k *Key, h [32]byte, ev Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.Secrets = []SecretRef{{Hash: SecretHash(h)}}
	val, err := json.Marshal(k)
	if err != nil {
		return err
	}
	hv, err := appendFactsValue(nil, k, 0)
	if err != nil {
		return err
	}
	ev.APIKeyID, ev.WorkspaceID = k.ID, k.WorkspaceID
	// Batch functions may run more than once: everything they write is
	// derived from their arguments and rolled back with a failed tx.
	return mapErr(b.db.Batch(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bKeys)
		if keys.Get([]byte(k.ID)) != nil {
			return ErrConflict
		}
		hashes := tx.Bucket(bHashes)
		if hashes.Get(h[:]) != nil {
			return ErrConflict
		}
		seq, err := keys.NextSequence()
		if err != nil {
			return err
		}
		if err := keys.Put([]byte(k.ID), val); err != nil {
			return err
		}
		if err := hashes.Put(h[:], hv); err != nil {
			return err
		}
		if err := tx.Bucket(bWsIdx).Put(seqKey(k.WorkspaceID, seq), []byte(k.ID)); err != nil {
			return err
		}
		return putEvent(tx, &ev, k.CreatedAt)
	}))
}

// putFacts writes the hashes value of secret h of k, valid until
// validUntil.
func putFacts(hashes *bolt.Bucket, h []byte, k *Key, validUntil int64) error {
	v, err := appendFactsValue(nil, k, validUntil)
	if err != nil {
		return err
	}
	return hashes.Put(h, v)
}

func putEvent(tx *bolt.Tx, ev *Event, at int64) error {
	events := tx.Bucket(bEvents)
	seq, err := events.NextSequence()
	if err != nil {
		return err
	}
	if ev.EventID == "" {
		return errors.New("store: event without id")
	}
	if ev.At == 0 {
		ev.At = at
	}
	val, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := events.Put(seqKey(ev.WorkspaceID, seq), val); err != nil {
		return err
	}
	if ev.APIKeyID != "" {
		return tx.Bucket(bKEvents).Put(seqKey(ev.APIKeyID, seq), val)
	}
	return nil
}

func getKey(tx *bolt.Tx, ws, id string) (*Key, error) {
	v := tx.Bucket(bKeys).Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	var k Key
	if err := json.Unmarshal(v, &k); err != nil {
		return nil, fmt.Errorf("store: decode key %s: %w", id, err)
	}
	if ws != "" && k.WorkspaceID != ws {
		return nil, ErrNotFound
	}
	if u := tx.Bucket(bUsed).Get([]byte(id)); len(u) == 8 {
		k.LastUsedAt = int64(binary.BigEndian.Uint64(u))
	}
	return &k, nil
}

func putKey(tx *bolt.Tx, k *Key) error {
	val, err := json.Marshal(k)
	if err != nil {
		return err
	}
	return tx.Bucket(bKeys).Put([]byte(k.ID), val)
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, ws, id string) (*Key, error) {
	var k *Key
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		k, err = getKey(tx, ws, id)
		return err
	})
	return k, mapErr(err)
}

func encodeCursor(seq []byte) string { return base64.RawURLEncoding.EncodeToString(seq) }

func decodeCursor(c string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 8 {
		return nil, ErrCursor
	}
	return b, nil
}

// scanNewest walks the keys of bucket under prefix 0x00 from the newest,
// starting after the cursor, calling fn for up to limit entries. It returns
// the next cursor.
func scanNewest(bk *bolt.Bucket, prefix string, p Page, fn func(v []byte) error) (string, error) {
	pre := append([]byte(prefix), 0)
	var start []byte
	if p.Cursor != "" {
		seq, err := decodeCursor(p.Cursor)
		if err != nil {
			return "", err
		}
		start = append(append([]byte{}, pre...), seq...)
	} else {
		start = append(append([]byte{}, pre...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	}
	c := bk.Cursor()
	k, v := c.Seek(start)
	if k == nil {
		k, v = c.Last()
	}
	// Step back to the last entry strictly before start.
	for k != nil && bytes.Compare(k, start) >= 0 {
		k, v = c.Prev()
	}
	n := 0
	var lastSeq []byte
	for ; k != nil && bytes.HasPrefix(k, pre) && len(k) == len(pre)+8; k, v = c.Prev() {
		if n == p.Limit {
			return encodeCursor(lastSeq), nil
		}
		if err := fn(v); err != nil {
			return "", err
		}
		lastSeq = append(lastSeq[:0], k[len(pre):]...)
		n++
	}
	return "", nil
}

// List implements Store.
func (b *Bolt) List(ctx context.Context, ws string, p Page) ([]*Key, string, error) {
	out := make([]*Key, 0, p.Limit)
	var next string
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		next, err = scanNewest(tx.Bucket(bWsIdx), ws, p, func(v []byte) error {
			k, err := getKey(tx, ws, string(v))
			if err != nil {
				return err
			}
			out = append(out, k)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, "", mapErr(err)
	}
	return out, next, nil
}

// Revoke implements Store.
func (b *Bolt) Revoke(ctx context.Context, ws, id string, at int64, ev Event) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out *Key
	err := b.db.Update(func(tx *bolt.Tx) error {
		k, err := getKey(tx, ws, id)
		if err != nil {
			return err
		}
		out = k
		if k.RevokedAt != 0 {
			return nil
		}
		k.RevokedAt = at
		if err := putKey(tx, k); err != nil {
			return err
		}
		hashes := tx.Bucket(bHashes)
		for i := range k.Secrets {
			h := k.Secrets[i].Hash[:]
			if hashes.Get(h) == nil {
				continue
			}
			if err := putFacts(hashes, h, k, k.Secrets[i].Until); err != nil {
				return err
			}
		}
		ev.APIKeyID, ev.WorkspaceID = k.ID, k.WorkspaceID
		return putEvent(tx, &ev, at)
	})
	return out, mapErr(err)
}

// Roll implements Store.
func (b *Bolt) Roll(ctx context.Context, ws, id string, newHash [32]byte, hint string, now, oldValidUntil int64, ev Event) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out *Key
	err := b.db.Update(func(tx *bolt.Tx) error {
		k, err := getKey(tx, ws, id)
		if err != nil {
			return err
		}
		if k.RevokedAt != 0 {
			return ErrRevoked
		}
		hashes := tx.Bucket(bHashes)
		if hashes.Get(newHash[:]) != nil {
			return ErrConflict
		}
		// Every secret of this key still open gets the window (never
		// longer than it had); secrets whose window has passed are deleted.
		kept := k.Secrets[:0]
		for _, ref := range k.Secrets {
			if oldValidUntil <= now || (ref.Until != 0 && ref.Until <= now) {
				if err := hashes.Delete(ref.Hash[:]); err != nil {
					return err
				}
				continue
			}
			if ref.Until == 0 || oldValidUntil < ref.Until {
				ref.Until = oldValidUntil
			}
			if err := putFacts(hashes, ref.Hash[:], k, ref.Until); err != nil {
				return err
			}
			kept = append(kept, ref)
		}
		k.Secrets = append(kept, SecretRef{Hash: SecretHash(newHash)})
		if err := putFacts(hashes, newHash[:], k, 0); err != nil {
			return err
		}
		k.SecretHint = hint
		if err := putKey(tx, k); err != nil {
			return err
		}
		out = k
		ev.APIKeyID, ev.WorkspaceID = k.ID, k.WorkspaceID
		return putEvent(tx, &ev, now)
	})
	return out, mapErr(err)
}

// Lookup implements Store. It reads the hashes value alone.
func (b *Bolt) Lookup(ctx context.Context, h [32]byte) (*apikey.Facts, error) {
	var f *apikey.Facts
	err := b.db.View(func(tx *bolt.Tx) error {
		hv := tx.Bucket(bHashes).Get(h[:])
		if hv == nil {
			return ErrNotFound
		}
		var err error
		if f, err = decodeFactsValue(hv); err != nil {
			return fmt.Errorf("store: hash value of key %q: %w", hv[:min(len(hv), apikey.IDLen)], err)
		}
		return nil
	})
	return f, mapErr(err)
}

// Record implements Store.
func (b *Bolt) Record(ctx context.Context, ev Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return mapErr(b.db.Batch(func(tx *bolt.Tx) error {
		e := ev
		return putEvent(tx, &e, time.Now().Unix())
	}))
}

// Events implements Store.
func (b *Bolt) Events(ctx context.Context, ws, apiKeyID string, p Page) ([]*Event, string, error) {
	out := make([]*Event, 0, p.Limit)
	var next string
	err := b.db.View(func(tx *bolt.Tx) error {
		bk, prefix := tx.Bucket(bEvents), ws
		if apiKeyID != "" {
			bk, prefix = tx.Bucket(bKEvents), apiKeyID
		}
		var err error
		next, err = scanNewest(bk, prefix, p, func(v []byte) error {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: decode event: %w", err)
			}
			if e.WorkspaceID != ws {
				return nil // another workspace's key: never shown
			}
			out = append(out, &e)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, "", mapErr(err)
	}
	return out, next, nil
}

// TouchLastUsed implements Store. It writes the used bucket alone, in id
// order, and never reads a key record: the ids come from lookups of stored
// keys (keys are never deleted), and an entry for an id without a record
// would only never be read.
func (b *Bolt) TouchLastUsed(ctx context.Context, used map[string]int64) error {
	if len(used) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(used)) // in key order: neighbours share pages
	return mapErr(b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bUsed)
		for _, id := range ids {
			at := used[id]
			if old := bk.Get([]byte(id)); len(old) == 8 && at <= int64(binary.BigEndian.Uint64(old)) {
				continue
			}
			if err := bk.Put([]byte(id), binary.BigEndian.AppendUint64(nil, uint64(at))); err != nil {
				return err
			}
		}
		return nil
	}))
}

// Ready implements Store.
func (b *Bolt) Ready(ctx context.Context) error {
	return mapErr(b.db.View(func(*bolt.Tx) error { return nil }))
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }
