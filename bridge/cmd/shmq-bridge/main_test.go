package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/bridge"
)

func TestRouteFlags(t *testing.T) {
	var r routes
	require.NoError(t, r.Set("orders,reliable"))
	require.NoError(t, r.Set("ticks=market.ticks"))
	require.Error(t, r.Set("x,fast"))
	require.Equal(t, routes{{Topic: "orders", Reliable: true}, {Topic: "ticks", Subject: "market.ticks"}}, r)
}

func TestBusFlags(t *testing.T) {
	var b buses
	require.NoError(t, b.Set("plant,reliable"))
	require.NoError(t, b.Set("plant=x.y,in"))
	require.Error(t, b.Set("plant,sideways"))
	require.Equal(t, buses{{Bus: "plant", Reliable: true, Out: true, In: true}, {Bus: "plant", Subject: "x.y", In: true}}, b)
}

func TestRunRejectsBadConfig(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"--name", "a.b", "--out", "orders"}, &out)
	require.ErrorIs(t, err, bridge.ErrConfig)
	require.Error(t, run([]string{"--bogus"}, &out))
}
