"""Schemathesis hooks for the API test (loaded through SCHEMATHESIS_HOOKS): generated submission
bodies keep the few rules across fields that JSON Schema cannot state and the description states
in words (/dev/shm within the memory, a name at most once in env, the environment's and the
command's text within the limit). Every other limit is in the description itself."""
import schemathesis

MAX_TEXT = 8000
DEFAULT_MEMORY_MIB = 32768


def _env_pairs(env):
    if isinstance(env, dict):
        return list(env.items())
    return [tuple(p) for p in env if isinstance(p, (list, tuple)) and len(p) == 2] if isinstance(env, list) else []


@schemathesis.hook
def filter_body(ctx, body):
    if ctx.operation is None or ctx.operation.method.upper() != "POST" or ctx.operation.path != "/jobs":
        return True
    if not isinstance(body, dict):
        return True
    memory, shm = body.get("memory_mib", DEFAULT_MEMORY_MIB), body.get("shm_mib", 0)
    if isinstance(memory, (int, float)) and isinstance(shm, (int, float)) and shm > memory:
        return False
    pairs = _env_pairs(body.get("env") or [])
    names = [p[0] for p in pairs]
    if len(names) != len(set(names)):
        return False
    if sum(len(str(n)) + len(str(v)) for n, v in pairs) > MAX_TEXT:
        return False
    if not isinstance(body.get("command"), (str, list)):
        return True
    command = body.get("command")
    return not (isinstance(command, list) and sum(len(str(c)) for c in command) > MAX_TEXT)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """The coverage phase's boundary values skip filter_body: /dev/shm beyond the memory is
    brought down to the memory (what the rule allows), whatever else the case holds."""
    if case.operation.method.upper() != "POST" or case.operation.path != "/jobs" or not isinstance(case.body, dict):
        return
    memory, shm = case.body.get("memory_mib", DEFAULT_MEMORY_MIB), case.body.get("shm_mib")
    if type(memory) in (int, float) and type(shm) in (int, float) and shm > memory >= 0:
        case.body["shm_mib"] = memory
    env = case.body.get("env")
    if isinstance(env, list) and len(env) <= 200:  # a name at most once: later well-formed twins dropped
        seen, kept = set(), []
        for pair in env:
            twin = (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
                    and "\x00" not in pair[1] and pair[0] in seen)
            if not twin:
                kept.append(pair)
                if isinstance(pair, list) and pair and isinstance(pair[0], str):
                    seen.add(pair[0])
        case.body["env"] = kept
