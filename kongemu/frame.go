package kongemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxFrameSize caps one frame read from the plugin socket. The length prefix
// comes from another process: a larger value is refused before anything is
// allocated.
const MaxFrameSize = 16 << 20

// ErrFrameTooLarge is returned by the frame reader for a length prefix above
// MaxFrameSize.
var ErrFrameTooLarge = errors.New("kongemu: frame too large")

// readFrame reads one little-endian uint32 length-prefixed frame.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	if n <= 64<<10 {
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return buf, nil
	}
	// Large frames grow with the data actually received, so a bogus
	// length costs nothing until the bytes arrive.
	buf, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, err
	}
	if uint32(len(buf)) != n {
		return nil, io.ErrUnexpectedEOF
	}
	return buf, nil
}

// writeFrame writes data with its length prefix in a single Write.
func writeFrame(w io.Writer, data []byte) error {
	if len(data) > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(data))
	}
	buf := make([]byte, 4+len(data))
	binary.LittleEndian.PutUint32(buf, uint32(len(data)))
	copy(buf[4:], data)
	_, err := w.Write(buf)
	return err
}
