package bridge

// SetTestHooks sets the hooks a test kills the bridge process in (nil: none). Call before Run.
func SetTestHooks(afterLocalWrite, afterAck func()) {
	testAfterLocalWrite, testAfterAck = afterLocalWrite, afterAck
}
