import { createContext, useContext } from "react";
import type { Component } from "../lib/graph";
import { emptySnapshot, type RunSnapshot } from "../run/runStore";

export const CatalogContext = createContext<Map<string, Component>>(new Map());
export const RunViewContext = createContext<RunSnapshot>(emptySnapshot());
/** Validation problems per node id. */
export const ProblemsContext = createContext<Record<string, string[]>>({});

export const useCatalog = () => useContext(CatalogContext);
export const useRunView = () => useContext(RunViewContext);
export const useProblems = () => useContext(ProblemsContext);
