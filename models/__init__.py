"""Predictors: power draw, job duration, failure risk (built under the predictors issue)."""
