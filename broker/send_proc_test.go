//go:build linux

package broker_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/internal/proctest"
)

func init() {
	proctest.Register("broker-reserve-sender", runReserveSender)
}

// senderConfig tells a sender child what to send: Records records through Reserve and
// Commit, in batches of 1 to 8, with Options.Poison as told.
type senderConfig struct {
	Dir     string
	Name    string
	Records int
	Poison  bool
}

// sentRecord fills p as record seq: the sequence number, a CRC32-C of the rest, and bytes
// that depend on both.
func sentRecord(p []byte, seq uint64) {
	binary.LittleEndian.PutUint64(p, seq)
	for i := 12; i < len(p); i++ {
		p[i] = byte(seq*131 + uint64(i))
	}
	binary.LittleEndian.PutUint32(p[8:], crc32.Checksum(p[12:], crc32.MakeTable(crc32.Castagnoli)))
}

func recordLen(seq uint64) int { return 12 + int(seq*7919%500) }

func runReserveSender(c *proctest.Child) error {
	var cfg senderConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	conn, err := broker.Dial(ctx, cfg.Name, broker.Options{Dir: cfg.Dir, Poison: cfg.Poison, RingSize: 16 << 10})
	if err != nil {
		return err
	}
	for seq := uint64(0); seq < uint64(cfg.Records); {
		batch := 1 + seq%8
		for i := uint64(0); i < batch && seq < uint64(cfg.Records); i++ {
			p, err := conn.Reserve(ctx, uint32(seq), recordLen(seq))
			if err != nil {
				return err
			}
			sentRecord(p, seq)
			seq++
		}
		if err := conn.Commit(); err != nil {
			return err
		}
	}
	return conn.Close() // ErrBufferReused would say our own sending reused a buffer
}

// TestProcReserveSend: a client process sends 20,000 records (2,000 with -short) by
// Reserve, fill in place, Commit, in batches, through a small ring (so that Reserve waits
// for room and sends earlier records of its batch); the server reads every one intact and
// in order, then io.EOF. With and without Poison.
func TestProcReserveSend(t *testing.T) {
	records := 20000
	if testing.Short() {
		records = 2000
	}
	for _, poison := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "poison"}[poison], func(t *testing.T) {
			dir := testDir(t)
			l, err := broker.Listen("svc", broker.Options{Dir: dir})
			require.NoError(t, err)
			defer l.Close()
			p := proctest.Start(t, "broker-reserve-sender", proctest.Options{Args: jsonArgs(senderConfig{Dir: dir, Name: "svc", Records: records, Poison: poison})})
			ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
			defer cancel()
			conn, err := l.Accept(ctx)
			require.NoError(t, err)
			defer conn.Close()
			check := make([]byte, 0, 512)
			for seq := uint64(0); ; seq++ {
				rec, err := conn.Recv(ctx)
				if err == io.EOF {
					assert.Equal(t, uint64(records), seq, "records received")
					break
				}
				require.NoError(t, err)
				check = check[:recordLen(seq)]
				sentRecord(check, seq)
				if rec.Type != uint32(seq) || string(rec.Data) != string(check) {
					t.Fatalf("record %d: type %d, %d bytes, not as sent", seq, rec.Type, len(rec.Data))
				}
				conn.Release()
			}
			require.NoError(t, p.Wait(procTimeout))
		})
	}
}
