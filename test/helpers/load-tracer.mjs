// `node --import ./load-tracer.mjs …` prints "loaded <url>" on stderr for every module of pi it resolves: a test
// checks that `pi-server --help` never loads pi (which takes over a second).
import { register } from "node:module";

register("./load-tracer-hooks.mjs", import.meta.url);
