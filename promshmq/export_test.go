package promshmq

// PromName exposes promName to the tests.
var PromName = promName
