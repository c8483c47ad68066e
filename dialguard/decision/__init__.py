"""The decision core: the request and decision models, the keys, the plan that
decide.lua executes, and the Lua scripts (lua/). Adapters and stores depend on
it; it depends on nothing but the primitives (numbers, rules, time rules)."""
