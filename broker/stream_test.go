//go:build linux

package broker_test

import (
	"bufio"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/broker"
)

// TestStream: a connection works as an io.ReadWriteCloser of whole messages.
func TestStream(t *testing.T) {
	_, client, server := pair(t, broker.Options{Dir: testDir(t)})
	cs, ss := client.Stream(), server.Stream()
	n, err := cs.Write([]byte("hello, server"))
	require.NoError(t, err)
	assert.Equal(t, 13, n)
	_, err = cs.Write([]byte("second"))
	require.NoError(t, err)

	small := make([]byte, 4)
	_, err = ss.Read(small)
	assert.ErrorIs(t, err, io.ErrShortBuffer, "a message never comes in pieces")
	buf := make([]byte, 64)
	n, err = ss.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "hello, server", string(buf[:n]), "the short read kept the message")
	n, err = ss.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "second", string(buf[:n]))

	// Ordinary stream code on top: a bufio.Writer's flushes are messages.
	bw := bufio.NewWriter(ss)
	_, err = bw.WriteString("reply")
	require.NoError(t, err)
	require.NoError(t, bw.Flush())
	n, err = cs.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "reply", string(buf[:n]))

	require.NoError(t, cs.Close())
	_, err = ss.Read(buf)
	assert.ErrorIs(t, err, io.EOF, "the peer's Close ends the stream")
}
