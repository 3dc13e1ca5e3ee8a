package envelope_test

import (
	"fmt"

	"github.com/shmq/shmq/envelope"
)

func Example() {
	h, err := envelope.NewHeader("sensor.Reading", "capture")
	if err != nil {
		panic(err)
	}
	h.Priority = envelope.Critical
	h.Meta = []envelope.KV{{Key: "unit", Value: "celsius"}}

	// Size and Put write straight into a buffer a ring reserved; Append is the copying form.
	rec := make([]byte, 0, 128)
	rec, err = h.Append(rec, []byte("21.5"))
	if err != nil {
		panic(err)
	}

	v, err := envelope.Parse(rec)
	if err != nil {
		panic(err)
	}
	unit, _ := v.Meta("unit")
	fmt.Printf("%s from %s, %s, attempt %d: %s %s\n", v.Type(), v.Source(), v.Priority, v.Attempt, v.Payload(), unit)
	fmt.Println(v.ID == h.ID, len(rec))
	// Output:
	// sensor.Reading from capture, critical, attempt 1: 21.5 celsius
	// true 100
}
