package store

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// BulkKey is one key for BulkCreate: what Create takes as arguments.
type BulkKey struct {
	Key        *Key
	SecretHash [32]byte
	Event      Event
}

// bulkChunk is how many keys BulkCreate commits per transaction (a
// variable for the tests).
var bulkChunk = 20_000

// bulkFill is the page fill of a bulk load: keys given in key order are
// appended, so pages can be filled almost full (bbolt's default, 0.5, is for
// random inserts and would leave a bulk-loaded file twice as large). It
// changes the page layout only, never what is stored.
const bulkFill = 0.9

// BulkCreate stores keys as Create would, one after the other in slice
// order — the same key record, hash entry, workspace index entry and
// CREATED event, with the same sequence numbers — but commits 20,000 keys
// per transaction (one fsync each) instead of one batch per key. It is for
// tools that load many keys at once (bench/keygen), not for the API.
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
func (b *Bolt) BulkCreate(ctx context.Context, keys []BulkKey) error {
	type rec struct {
		bk      *BulkKey
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
			bk.Event.APIKeyID, bk.Event.WorkspaceID = bk.Key.ID, bk.Key.WorkspaceID
			recs[i] = rec{bk, val, appendFactsValue(nil, bk.Key, 0)}
		}
		err := b.update(func(tx *bolt.Tx) error {
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
