#!/usr/bin/env python3
"""Import circles between the modules of one crate.

Usage: .ci/module_cycles.py CRATE_SRC_DIR...   (e.g. storage/src lua-sdk/src)

Builds each crate's file-level module graph from the paths its code names
(`crate::a::b`, `super::x`, `self::x`, `use super::{x, y}`, and `x::` for a
child declared with `mod x;`), leaving out comments and test modules
(`tests.rs`, `#[cfg(test)] mod tests { ... }`), and prints every cycle
(strongly connected component) with the edges inside it. A child naming its
parent counts, as any edge does: a shared type goes down into a module of
its own. Exits 1 when a cycle is found. Text only: it reads no Cargo
metadata and misses method calls on types defined elsewhere.
"""
import os
import re
import sys


def modules(src):
    """Module path (tuple of names) -> file, for every non-test file."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith('.rs'):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] in ('mod', 'lib', 'main'):
                parts = parts[:-1]
            if parts and parts[-1] == 'tests':
                continue
            found[tuple(parts)] = path
    return found


def edges_of(mods):
    def resolve(path):
        """The longest prefix of `path` that is a module."""
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in mods:
                return tuple(path[:n])
        return None

    edges = {module: set() for module in mods}
    for module, path in mods.items():
        with open(path) as file:
            text = file.read()
        text = re.sub(r'(?s)#\[cfg\(test\)\]\s*mod tests\s*\{.*', '', text)
        text = re.sub(r'//[^\n]*', '', text)
        children = set(re.findall(
            r'(?m)^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;', text))
        targets = []
        for match in re.finditer(
                r'\b((?:crate|super|self|[a-z_][a-z_0-9]*)(?:::[A-Za-z_][A-Za-z_0-9]*)+)', text):
            segs = match.group(1).split('::')
            if segs[0] == 'crate':
                targets.append(segs[1:])
            elif segs[0] == 'super':
                base = list(module)
                while segs and segs[0] == 'super':
                    base, segs = base[:-1], segs[1:]
                targets.append(base + segs)
            elif segs[0] == 'self':
                targets.append(list(module) + segs[1:])
            elif segs[0] in children:
                targets.append(list(module) + segs)
        for match in re.finditer(r'use\s+(crate|super|self)((?:::super)*)::\{([^;]*)\};', text):
            head, supers = match.group(1), match.group(2).count('super')
            if head == 'crate':
                base = []
            elif head == 'super':
                base = list(module)[:-(1 + supers)]
            else:
                base = list(module)
            for item in re.sub(r'\{[^}]*\}', '', match.group(3)).split(','):
                if item.strip():
                    targets.append(base + item.strip().split('::'))
        for target in targets:
            resolved = resolve(target)
            if resolved is not None and resolved != module:
                edges[module].add(resolved)
    return edges


def cycles(edges):
    """Tarjan's strongly connected components of more than one module."""
    sys.setrecursionlimit(10000)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def main():
    name = lambda module: '::'.join(module) or 'crate'
    any_cycle = False
    for src in sys.argv[1:]:
        edges = edges_of(modules(src))
        components = cycles(edges)
        print(f'{src}: {len(components)} cycle(s)')
        for component in components:
            any_cycle = True
            inner = sorted((a, b) for a in component for b in edges[a] if b in component)
            print('  cycle:', ' '.join(map(name, component)))
            print('    ', ', '.join(f'{name(a)} -> {name(b)}' for a, b in inner))
    sys.exit(1 if any_cycle else 0)


if __name__ == '__main__':
    main()
