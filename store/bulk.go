package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/keygate/keygate/store/internal/bulkhook"
	bolt "go.etcd.io/bbolt"
)

// The bulk loader is for tools (bench/keygen) and benchmarks, through
// storetest.BulkCreate; it is not part of this package's API.
func init() {
	bulkhook.Create = func(ctx context.Context, b *Bolt, keys []*Key, hashes [][32]byte, events []Event) error {
		if len(hashes) != len(keys) || len(events) != len(keys) {
			return errors.New("bulk create: keys, hashes and events differ in length")
		}
		in := make([]bulkKey, len(keys))
		for i := range keys {
			in[i] = bulkKey{Key: keys[i], SecretHash: hashes[i], Event: events[i]}
		}
		err := b.bulkCreate(ctx, in)
		for i := range in {
			events[i] = in[i].Event
		}
		return err
	}
}

// bulkKey is one key for bulkCreate: what Create takes as arguments.
type bulkKey struct {
	Key        *Key
	SecretHash [32]byte
	Event      Event
}

// bulkChunk is how many keys bulkCreate commits per transaction (a
// variable for the tests).
var bulkChunk = 20_000

// bulkFill is the page fill of a bulk load: keys given in key order are
// appended, so pages can be filled almost full (bbolt's default, 0.5, is for
// random inserts and would leave a bulk-loaded file twice as large). It
// changes the page layout only, never what is stored.
const bulkFill = 0.9

// bulkCreate stores keys as Create would, one after the other in slice
// order — the same key record, hash entry, workspace index entry and
// CREATED event, with the same sequence numbers — but commits 20,000 keys
// per transaction (one fsync each) instead of one batch per key. It is for
// tools that load many keys at once (bench/keygen, through
// storetest.BulkCreate), not for the API.
//
// Each chunk is all or nothing, and a conflict (an id or hash already
// stored, or repeated in keys) fails its chunk with ErrConflict; chunks
// committed before a failure stay stored, and the error says how many keys
// that is. Like Create, it sets every Key's Secrets and every Event's
// APIKeyID and WorkspaceID.
//
// Loading is fastest, and the file smallest, when keys come in the order of
// their secret hashes and ids (bench/keygen sorts them so): then every
// bucket is appended to; in random order each transaction rewrites pages all
// over the file.
func (b *Bolt) bulkCreate(ctx context.Context, keys []bulkKey) error {
	type rec struct {
		bk      *bulkKey
		val, hv []byte
	}
	for done := 0; done < len(keys); {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("bulk create: %d of %d keys stored: %w", done, len(keys), err)
		}
		chunk := keys[done:min(done+bulkChunk, len(keys))]
		recs := make([]rec, len(chunk))
		for i := range chunk {
			bk := &chunk[i]
			bk.Key.Secrets = []SecretRef{{Hash: SecretHash(bk.SecretHash)}}
			val, err := json.Marshal(bk.Key)
			if err != nil {
				return fmt.Errorf("bulk create: %d of %d keys stored: %w", done, len(keys), err)
			}
			hv, err := appendFactsValue(nil, bk.Key, 0)
			if err != nil {
				return fmt.Errorf("bulk create: %d of %d keys stored: %w", done, len(keys), err)
			}
			bk.Event.APIKeyID, bk.Event.WorkspaceID = bk.Key.ID, bk.Key.WorkspaceID
			recs[i] = rec{bk, val, hv}
		}
		err := b.db.Update(func(tx *bolt.Tx) error {
			keysB, hashes, wsidx := tx.Bucket(bKeys), tx.Bucket(bHashes), tx.Bucket(bWsIdx)
			for _, name := range buckets {
				tx.Bucket(name).FillPercent = bulkFill
			}
			// Exactly Create's batch function per key, in order: the
			// sequences (and so List and Events order) are Create's.
			for _, r := range recs {
				k, h := r.bk.Key, &r.bk.SecretHash
				if keysB.Get([]byte(k.ID)) != nil {
					return ErrConflict
				}
				if hashes.Get(h[:]) != nil {
					return ErrConflict
				}
				seq, err := keysB.NextSequence()
				if err != nil {
					return err
				}
				if err := keysB.Put([]byte(k.ID), r.val); err != nil {
					return err
				}
				if err := hashes.Put(h[:], r.hv); err != nil {
					return err
				}
				if err := wsidx.Put(seqKey(k.WorkspaceID, seq), []byte(k.ID)); err != nil {
					return err
				}
				ev := r.bk.Event
				if err := putEvent(tx, &ev, k.CreatedAt); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("bulk create: %d of %d keys stored: %w", done, len(keys), mapErr(err))
		}
		done += len(chunk)
	}
	return nil
}
